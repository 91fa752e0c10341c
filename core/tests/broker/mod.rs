//! Looking at RabbitMQ from outside with `rabbitmqctl`, for tests that check what the
//! broker itself sees of the bus's connections.

use std::process::Command;

/// `field` (a `rabbitmqctl list_connections` info item such as `pid` or `frame_max`) of
/// every open connection whose client-provided name is one of `names`, as
/// `(name, value)` pairs sorted by name. Blocking: call from `spawn_blocking`.
pub fn connections_named(field: &str, names: &[String]) -> Vec<(String, String)> {
    let listing = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            field,
            "client_properties",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .expect("run rabbitmqctl list_connections");
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let mut found = Vec::new();
    for line in listing.lines() {
        let Some((value, properties)) = line.split_once('\t') else {
            continue;
        };
        for name in names {
            if properties.contains(&format!("{{\"connection_name\",\"{name}\"}}")) {
                found.push((name.clone(), value.trim().to_owned()));
            }
        }
    }
    found.sort();
    found
}
