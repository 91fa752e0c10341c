//! One event to many chats (placeholder).
fn main() {}
