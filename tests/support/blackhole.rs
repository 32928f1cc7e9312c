//! A loopback address whose connects hang, shared by the integration tests (through
//! `support`) and the unit tests (through `test_util`).

use std::net::SocketAddr;
use std::time::Duration;

/// A loopback address whose connects hang: a listener with a full accept queue that never
/// accepts (the kernel drops further SYNs). Keep the returned guard alive while it is used.
pub fn blackhole_addr() -> (SocketAddr, Vec<socket2::Socket>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    listener.bind(&any.into()).expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let mut guard = vec![listener];
    // Fill the accept queue (backlog 0 still admits one or two) with connections never accepted.
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_nonblocking(true).expect("nonblocking");
        let _ = s.connect(&addr.into());
        guard.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    (addr, guard)
}
