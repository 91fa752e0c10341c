//! The RabbitMQ HTTP auth endpoints at the HTTP level (form bodies exactly as
//! `rabbitmq_auth_backend_http` sends them), against both storage backends: served on
//! the internal listener only, behind the shared secret when one is set, with the
//! decisions of docs/ARCHITECTURE.md §8.

mod common;

use stargazer_core::model::Access;

use common::{perms, Backend, TestServer};

async fn ask(server: &TestServer, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = server
        .http
        .post(format!("{}/auth/{path}", server.internal_base))
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn resource<'a>(
    user: &'a str,
    kind: &'a str,
    name: &'a str,
    permission: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("username", user),
        ("vhost", "/"),
        ("resource", kind),
        ("name", name),
        ("permission", permission),
        ("tags", ""),
    ]
}

fn topic<'a>(user: &'a str, permission: &'a str, key: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut form = resource(user, "topic", "stargazer", permission);
    form.push(("routing_key", key));
    form.push(("variable_map.username", user));
    form
}

async fn rabbitmq_decisions(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.bot().await;
    server
        .credential(
            "worker",
            perms(&[("coordinator", Access::Ro), ("mq", Access::Rw)]),
        )
        .await;
    server
        .credential("ops", perms(&[("admin", Access::Rw), ("mq", Access::Rw)]))
        .await;
    server
        .credential("reader", perms(&[("api", Access::Ro)]))
        .await;

    // Login.
    let allow = |s: &str| (200, s.to_owned());
    assert_eq!(
        ask(
            &server,
            "user",
            &[("username", "bot"), ("password", "pw-bot")]
        )
        .await,
        allow("allow")
    );
    assert_eq!(
        ask(
            &server,
            "user",
            &[("username", "worker"), ("password", "pw-worker")]
        )
        .await,
        allow("allow")
    );
    assert_eq!(
        ask(
            &server,
            "user",
            &[("username", "ops"), ("password", "pw-ops")]
        )
        .await,
        allow("allow management")
    );
    assert_eq!(
        ask(
            &server,
            "user",
            &[("username", "reader"), ("password", "pw-reader")]
        )
        .await,
        allow("deny")
    );
    assert_eq!(
        ask(
            &server,
            "user",
            &[("username", "bot"), ("password", "nope")]
        )
        .await,
        allow("deny")
    );
    assert_eq!(
        ask(&server, "user", &[("username", "ghost"), ("password", "x")]).await,
        allow("deny")
    );
    assert_eq!(ask(&server, "user", &[("username", "bot")]).await.0, 400);

    // Virtual hosts.
    let vhost = |user: &'static str, vhost: &'static str| {
        vec![("username", user), ("vhost", vhost), ("ip", "127.0.0.1")]
    };
    assert_eq!(
        ask(&server, "vhost", &vhost("bot", "/")).await,
        allow("allow")
    );
    assert_eq!(
        ask(&server, "vhost", &vhost("bot", "other")).await,
        allow("deny")
    );
    assert_eq!(
        ask(&server, "vhost", &vhost("reader", "/")).await,
        allow("deny")
    );
    assert_eq!(
        ask(&server, "vhost", &vhost("ghost", "/")).await,
        allow("deny")
    );

    // Resources: what a consumer needs on its own queue, the exchange write only rw
    // gets, the configure only the topology credential (ops: admin rw + mq rw) gets.
    let queue = "stargazer.bot.telegram";
    for (user, kind, name, permission, expected) in [
        ("bot", "queue", queue, "configure", "allow"),
        ("bot", "queue", queue, "write", "allow"),
        ("bot", "exchange", "stargazer", "read", "allow"),
        ("bot", "queue", queue, "read", "allow"),
        ("bot", "exchange", "stargazer.dlx", "write", "allow"),
        ("bot", "exchange", "stargazer", "configure", "deny"),
        ("bot", "exchange", "stargazer", "write", "deny"),
        ("bot", "exchange", "amq.default", "write", "deny"),
        ("bot", "queue", "stargazer.middleware.delay", "read", "deny"),
        ("bot", "queue", "stargazer.dead", "configure", "deny"),
        ("bot", "queue", "other", "read", "deny"),
        ("bot", "queue", "amq.gen-1", "configure", "deny"),
        ("worker", "exchange", "stargazer", "write", "allow"),
        ("worker", "exchange", "stargazer", "configure", "deny"),
        ("worker", "queue", queue, "read", "deny"),
        ("worker", "exchange", "amq.topic", "write", "deny"),
        ("worker", "exchange", "amq.default", "write", "deny"),
        ("ops", "exchange", "stargazer", "configure", "allow"),
        ("ops", "exchange", "stargazer.dlx", "configure", "allow"),
        ("ops", "queue", queue, "configure", "allow"),
        ("ops", "queue", "stargazer.dead", "read", "allow"),
        ("ops", "exchange", "amq.default", "write", "deny"),
        ("reader", "queue", queue, "read", "deny"),
        ("ghost", "queue", queue, "read", "deny"),
    ] {
        assert_eq!(
            ask(&server, "resource", &resource(user, kind, name, permission)).await,
            allow(expected),
            "{user} {permission} {kind} {name}"
        );
    }
    let mut other_vhost = resource("worker", "exchange", "stargazer", "write");
    other_vhost[1] = ("vhost", "other");
    assert_eq!(ask(&server, "resource", &other_vhost).await, allow("deny"));
    assert_eq!(
        ask(
            &server,
            "resource",
            &resource("bot", "queue", queue, "delete")
        )
        .await
        .0,
        400
    );
    assert_eq!(
        ask(
            &server,
            "resource",
            &resource("bot", "binding", queue, "read")
        )
        .await
        .0,
        400
    );

    // Topics: binding keys (read) for both, routing keys (write) for rw only.
    assert_eq!(
        ask(&server, "topic", &topic("bot", "read", "*")).await,
        allow("allow")
    );
    assert_eq!(
        ask(&server, "topic", &topic("bot", "write", "youtube")).await,
        allow("deny")
    );
    assert_eq!(
        ask(&server, "topic", &topic("worker", "write", "youtube.delay")).await,
        allow("allow")
    );
    assert_eq!(
        ask(&server, "topic", &topic("reader", "read", "*")).await,
        allow("deny")
    );
    // Publishing to the dead-letter exchange is a topic write: rw only.
    let mut dlx = topic("bot", "write", "youtube");
    dlx[3] = ("name", "stargazer.dlx");
    assert_eq!(ask(&server, "topic", &dlx).await, allow("deny"));
    dlx[0] = ("username", "worker");
    assert_eq!(ask(&server, "topic", &dlx).await, allow("allow"));

    // Usernames longer than any credential's are refused before any lookup.
    let long = "u".repeat(129);
    for (path, form) in [
        ("user", vec![("username", long.as_str()), ("password", "x")]),
        ("vhost", vec![("username", long.as_str()), ("vhost", "/")]),
        ("resource", resource(&long, "queue", queue, "read")),
        ("topic", topic(&long, "read", "*")),
    ] {
        assert_eq!(ask(&server, path, &form).await.0, 400, "{path}");
    }

    // The public listener does not serve the backend, nor document it.
    let public = server
        .http
        .post(format!("{}/auth/user", server.base))
        .form(&[("username", "bot"), ("password", "pw-bot")])
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let internal_doc: serde_json::Value = server
        .http
        .get(format!("{}/openapi.json", server.internal_base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(internal_doc["paths"]["/auth/user"]["post"].is_object());

    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"stargazer_api_mq_auth_total{check="topic",result="deny"}"#),
        "{metrics}"
    );
    server.stop().await;
}

/// With `auth_secret`, only requests carrying it in HTTP Basic are answered; with
/// `metrics_on_internal`, `/metrics` moves to the internal listener.
async fn secret_and_internal_metrics(backend: Backend) {
    const SECRET: &str = "0123456789abcdef-secret";
    let config = stargazer_api::ApiConfig {
        auth_secret: Some(SECRET.into()),
        metrics_on_internal: true,
        internal_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..common::test_config()
    };
    let server = TestServer::with_config(backend.connect().await, config).await;
    server.bot().await;
    let url = format!("{}/auth/user", server.internal_base);
    let form = [("username", "bot"), ("password", "pw-bot")];
    let without = server.http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(without.status(), 401);
    assert!(without.headers().contains_key("www-authenticate"));
    for wrong in ["0123456789abcdef-secreT", "0123456789abcdef-secre", ""] {
        let response = server
            .http
            .post(&url)
            .basic_auth("rabbit", Some(wrong))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{wrong:?}");
    }
    let right = server
        .http
        .post(&url)
        .basic_auth("rabbit", Some(SECRET))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert_eq!(right.text().await.unwrap(), "allow");

    let public = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let internal = server
        .http
        .get(format!("{}/metrics", server.internal_base))
        .send()
        .await
        .unwrap();
    assert_eq!(internal.status(), 200);
    let text = internal.text().await.unwrap();
    assert!(
        text.contains(r#"stargazer_api_mq_auth_total{check="secret",result="unauthorized"} 4"#),
        "{text}"
    );
    assert!(
        text.contains(r#"stargazer_api_mq_auth_total{check="user",result="allow"} 1"#),
        "{text}"
    );
    server.stop().await;
}

both_backends!(rabbitmq_decisions, secret_and_internal_metrics);
