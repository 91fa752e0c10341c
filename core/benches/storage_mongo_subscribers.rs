//! Fan-out lookup on MongoDB: times `MongoStorage::subscribers` (one `$lookup`
//! aggregation) for one entity with many subscribers, beside two same-run references:
//! reading the matching subscriptions alone (the floor any join must pay) and the
//! two-query join (`users` by `_id: {$in: [...]}`, 1 000 ids per query).
//!
//! `cargo bench -p stargazer-core --bench storage_mongo_subscribers`; env
//! `STARGAZER_TEST_MONGO_URL` (default `mongodb://127.0.0.1:27017/`), `SUBSCRIBERS`
//! (default 10 000), `SKIP_IN=1` to leave out the slow `$in` variant.

use stargazer_core::storage::UserStore;
use std::time::{Duration, Instant};

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};
use futures::TryStreamExt;
use stargazer_core::storage::mongo::MongoStorage;
use uuid::Uuid;

const RUNS: usize = 3;

fn bin(id: Uuid) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: id.as_bytes().to_vec(),
    })
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() {
    let url = std::env::var("STARGAZER_TEST_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/".to_owned());
    let n: usize = std::env::var("SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let skip_in = std::env::var("SKIP_IN").is_ok_and(|v| v == "1");
    let name = format!("sgbench_{}", Uuid::new_v4().simple());
    let storage = MongoStorage::connect_db(&url, &name)
        .await
        .expect("MongoDB reachable");
    let db = storage.database().clone();
    let users = db.collection::<Document>("users");
    let subscriptions = db.collection::<Document>("subscriptions");

    // One entity with `n` subscribers (a tenth on another platform, a seventh paused,
    // a third filtering on another kind) and as many subscriptions to a second entity.
    let entity = Uuid::new_v4();
    let noise = Uuid::new_v4();
    let mut user_docs = Vec::with_capacity(2 * n);
    let mut sub_docs = Vec::with_capacity(2 * n);
    for i in 0..2 * n {
        let id = Uuid::new_v4();
        let kinds: Vec<&str> = match i % 3 {
            0 => vec![],
            1 => vec!["youtube.live"],
            _ => vec!["twitter.tweet"],
        };
        user_docs.push(doc! {
            "_id": bin(id),
            "im": if i % 10 == 0 { "other" } else { "telegram" },
            "im_chat_id": i.to_string(), "name": "u", "language": "en",
            "settings": { "timezone": Bson::Null, "paused": i % 7 == 0 },
            "created_at": bson::DateTime::from_millis(1_700_000_000_000),
        });
        let target = if i < n { entity } else { noise };
        sub_docs.push(doc! { "user": bin(id), "entity": bin(target), "kinds": kinds });
    }
    users.insert_many(user_docs).await.expect("users load");
    subscriptions
        .insert_many(sub_docs)
        .await
        .expect("subscriptions load");
    println!(
        "{n} subscribers to one entity ({} documents per collection)",
        2 * n
    );

    let filter = doc! {
        "entity": bin(entity),
        "$or": [ { "kinds": "youtube.live" }, { "kinds": { "$size": 0 } } ],
    };

    let mut floor = Vec::new();
    let mut found = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let subs: Vec<Document> = subscriptions
            .find(filter.clone())
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("find");
        floor.push(start.elapsed());
        found = subs.len();
    }
    println!(
        "baseline: matching subscriptions only   {:>10.3?} median of {RUNS} ({found} docs)",
        median(floor)
    );

    let mut lookup = Vec::new();
    let mut result = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let got = storage
            .subscribers(entity, "youtube.live", "telegram")
            .await
            .expect("subscribers");
        lookup.push(start.elapsed());
        result = got.len();
    }
    println!(
        "subscribers() via $lookup              {:>10.3?} median of {RUNS} ({result} subscribers)",
        median(lookup)
    );

    if !skip_in {
        let start = Instant::now();
        let subs: Vec<Document> = subscriptions
            .find(filter.clone())
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("find");
        let ids: Vec<Bson> = subs.iter().filter_map(|d| d.get("user").cloned()).collect();
        let mut matched = 0;
        for chunk in ids.chunks(1_000) {
            let page: Vec<Document> = users
                .find(doc! {
                    "_id": { "$in": chunk.to_vec() },
                    "im": "telegram",
                    "settings.paused": { "$ne": true },
                })
                .await
                .expect("find users")
                .try_collect()
                .await
                .expect("find users");
            matched += page.len();
        }
        println!(
            "two queries via $in (1 000 ids each)   {:>10.3?} single run ({matched} subscribers)",
            start.elapsed()
        );
    }

    db.drop().await.expect("drop bench database");
}
