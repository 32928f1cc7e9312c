-- Keep the URL host (bench.test) for the Host header and TLS SNI, but connect to the
-- loopback address given in LOADTEST_CONNECT (default 127.0.0.1): no /etc/hosts edit.
-- Only resolve is overridden, so wrk still sends its prebuilt request (no per-request Lua).
local connect_host = os.getenv("LOADTEST_CONNECT") or "127.0.0.1"
function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup(connect_host, service)
end
