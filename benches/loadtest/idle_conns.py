#!/usr/bin/env python3
"""Open N keep-alive connections to a proxy and leave them idle (stdlib asyncio only).

Each connection sends one `GET PATH HTTP/1.1` (Host: bench.test), reads the whole response
and then stays open and silent, so the proxy holds N idle keep-alive client connections.
With --h2c it speaks HTTP/2 with prior knowledge instead: the preface, an empty SETTINGS,
one GET on stream 1 (HPACK written by hand: the static table's :method GET, :scheme http,
:path / and a literal :authority), SETTINGS acknowledged, frames read until the response's
END_STREAM; then silent.
When all are open it writes {"opened": n, ...} to --ready-file, holds them --hold seconds
(the harness reads the proxy's RSS meanwhile), counts how many the proxy kept open, writes
the final JSON to --out and exits. Loopback only; bounded in count and time.
"""
import argparse
import asyncio
import json
import resource
import ssl
import sys
import time


def h2_frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS, H2_GOAWAY = 0, 1, 4, 7
H2_END_STREAM, H2_ACK = 0x1, 0x1


def h2_get(a):
    """The preface, SETTINGS and one GET (END_HEADERS | END_STREAM) on stream 1."""
    authority = a.sni.encode()
    block = b"\x82\x86" + (b"\x84" if a.path == "/" else b"\x04" + bytes([len(a.path)]) + a.path.encode()) \
        + b"\x41" + bytes([len(authority)]) + authority
    return H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0, b"") + h2_frame(H2_HEADERS, 0x4 | H2_END_STREAM, 1, block)


async def h2_exchange(a, reader, writer):
    writer.write(h2_get(a))
    while True:
        head = await asyncio.wait_for(reader.readexactly(9), timeout=a.timeout)
        length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        await asyncio.wait_for(reader.readexactly(length), timeout=a.timeout)
        if kind == H2_SETTINGS and not flags & H2_ACK:
            writer.write(h2_frame(H2_SETTINGS, H2_ACK, 0, b""))
        elif kind == H2_GOAWAY:
            raise ConnectionError("GOAWAY before the response")
        elif stream == 1 and kind in (H2_DATA, H2_HEADERS) and flags & H2_END_STREAM:
            await writer.drain()
            return


async def open_one(a, sem, ctx, conns, errors):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(a.host, a.port, ssl=ctx,
                                        server_hostname=a.sni if ctx else None,
                                        limit=1 << 20),
                timeout=a.timeout)
            if a.h2c:
                await h2_exchange(a, reader, writer)
                conns.append((reader, writer))
                return
            writer.write(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: gatehouse-loadtest-idle\r\n\r\n"
                          % (a.path, a.sni)).encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=a.timeout)
            length = 0
            chunked = False
            for line in head.split(b"\r\n"):
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
                elif k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await asyncio.wait_for(reader.readexactly(length), timeout=a.timeout)
            conns.append((reader, writer))
        except Exception as e:  # noqa: BLE001
            errors[type(e).__name__ + (": " + str(e)[:60] if str(e) else "")] = \
                errors.get(type(e).__name__ + (": " + str(e)[:60] if str(e) else ""), 0) + 1


async def main_async(a):
    ctx = None
    if a.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["http/1.1"])
    sem = asyncio.Semaphore(a.parallel)
    conns, errors = [], {}
    t0 = time.monotonic()
    deadline = t0 + a.max_open_s
    tasks = [asyncio.ensure_future(open_one(a, sem, ctx, conns, errors)) for _ in range(a.n)]
    done, pending = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))
    for t in pending:
        t.cancel()
    open_s = time.monotonic() - t0
    res = {"wanted": a.n, "opened": len(conns), "open_s": round(open_s, 2), "tls": a.tls, "h2c": a.h2c,
           "errors": errors, "timed_out": len(pending)}
    with open(a.ready_file, "w") as f:
        json.dump(res, f)
    await asyncio.sleep(a.hold)
    await asyncio.sleep(0.2)  # let pending EOFs arrive
    res["alive"] = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
    if errors and not conns:
        res["error"] = next(iter(errors))
    for _, w in conns:
        w.transport.abort()
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sni", default="bench.test")
    p.add_argument("--path", default="/")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--h2c", action="store_true", help="HTTP/2 with prior knowledge, no TLS")
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=256)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--max-open-s", type=float, default=60.0)
    p.add_argument("--hold", type=float, default=3.0)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.h2c and a.tls:
        sys.exit("--h2c is cleartext HTTP/2; not with --tls")
    if a.host not in ("127.0.0.1", "localhost", "::1") and not a.host.startswith("127."):
        sys.exit("loopback only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.n + 512) if hard != resource.RLIM_INFINITY else a.n + 512
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < a.n + 64:
        a.n = max(0, want - 64)
    res = asyncio.run(main_async(a))
    with open(a.out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
