//! The RabbitMQ HTTP auth endpoints at the HTTP level (form bodies exactly as
//! `rabbitmq_auth_backend_http` sends them), against both storage backends.

mod common;

use stargazer_core::model::Access;

use common::{perms, Backend, TestServer};

async fn ask(server: &TestServer, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = server
        .http
        .post(format!("{}/auth/{path}", server.base))
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

    // Resources: what a consumer needs, and the exchange write only rw gets.
    let queue = "stargazer.bot.telegram";
    for (user, kind, name, permission, expected) in [
        ("bot", "queue", queue, "configure", "allow"),
        ("bot", "queue", queue, "write", "allow"),
        ("bot", "exchange", "stargazer", "read", "allow"),
        ("bot", "queue", queue, "read", "allow"),
        ("bot", "exchange", "stargazer", "configure", "allow"),
        ("bot", "exchange", "stargazer", "write", "deny"),
        ("bot", "exchange", "amq.default", "write", "allow"),
        ("bot", "queue", "other", "read", "deny"),
        ("bot", "queue", "amq.gen-1", "configure", "deny"),
        ("worker", "exchange", "stargazer", "write", "allow"),
        ("worker", "exchange", "amq.topic", "write", "deny"),
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

both_backends!(rabbitmq_decisions);
