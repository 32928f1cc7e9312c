//! Helpers shared by the unit tests of several modules.

/// YAML builders for the objects Gatehouse reads, shared with the integration tests.
#[path = "../tests/support/yaml.rs"]
pub mod yaml;

/// A loopback address whose connects hang: a listener whose accept queue is full.
pub fn blackhole() -> (std::net::SocketAddr, Vec<socket2::Socket>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut guard = vec![listener];
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        guard.push(s);
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    (addr, guard)
}
