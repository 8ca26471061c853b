use std::net::TcpStream;

use hookbus_testkit::{MIN_VERSION, NatsServer, nats_server_binary, version_of};

#[test]
fn starts_a_recent_server_and_restarts_it_on_the_same_port() {
    let binary = nats_server_binary().unwrap();
    assert!(version_of(&binary).unwrap() >= MIN_VERSION);
    let mut server = NatsServer::start();
    assert_ne!(server.port(), 4222, "tests never use the shared server");
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_ok());
    server.stop();
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_err());
    server.start_again();
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_ok());
    assert!(server.store_dir().join("jetstream").is_dir());
}

#[test]
fn jetstream_options_go_inside_the_jetstream_block_beside_its_store() {
    // nats-server refuses an unknown or misplaced option, so starting at all shows the option
    // landed in the block; the store directory shows the block kept its `store_dir`.
    let server = NatsServer::start_with_jetstream("sync_interval: always");
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_ok());
    let config = std::fs::read_to_string(server.store_dir().join("server.conf")).unwrap();
    assert!(config.contains("  sync_interval: always\n}"), "{config}");
    assert!(server.store_dir().join("jetstream").is_dir());
}
