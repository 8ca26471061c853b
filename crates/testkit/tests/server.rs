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
