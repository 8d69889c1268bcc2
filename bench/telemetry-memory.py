#!/usr/bin/env python3
"""Memory of bext's telemetry: RSS after 10k distinct paths (series must stay
bounded), and RSS per metric series (each distinct status code on a route is a
new series of the request histogram). Usage: telemetry-memory.py --bin target/release/bext"""
import argparse, http.client, http.server, os, socket, subprocess, sys, tempfile, threading, time
from urllib.parse import urlparse, parse_qs

class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        status = int(q.get("status", ["200"])[0])
        body = b"ok\n"
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

def series(conn):
    conn.request("GET", "/__bext/metrics"); r = conn.getresponse(); text = r.read().decode()
    return sum(1 for l in text.splitlines() if l.startswith("bext_http_server_request_duration_seconds_count"))

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--bin", required=True); a = ap.parse_args()
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    port = free_port(); d = tempfile.mkdtemp()
    open(f"{d}/bext.toml", "w").write(f"""[server]
listen = ["127.0.0.1:{port}"]
threads = 1
pid_file = "{d}/bext.pid"
upgrade_sock = "{d}/up.sock"
[upstreams.o]
nodes = ["127.0.0.1:{origin.server_address[1]}"]
retries = 0
[[route_rules]]
pattern = "/*"
proxy = "o"
cache = false
[waf]
mode = "off"
[limits]
allow = ["127.0.0.0/8"]
[telemetry]
access_log = "{d}/access.log"
""")
    p = subprocess.Popen([a.bin, "serve", "-c", f"{d}/bext.toml"], stderr=subprocess.DEVNULL)
    for _ in range(200):
        try: socket.create_connection(("127.0.0.1", port)).close(); break
        except OSError: time.sleep(0.05)
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(200):  # warm up allocator and pools
        c.request("GET", f"/warm"); c.getresponse().read()
    time.sleep(0.5); base = rss_kib(p.pid); s0 = series(c)
    for i in range(10000):
        c.request("GET", f"/p/{i}/{i*7919}"); c.getresponse().read()
    time.sleep(0.5); after = rss_kib(p.pid); s1 = series(c)
    print(f"10k distinct paths: RSS {base} KiB -> {after} KiB (+{after-base} KiB); request-duration series {s0} -> {s1}")
    codes = [c_ for c_ in range(200, 600) if c_ not in (204, 304) and not 100 <= c_ < 200 and c_ not in (502, 503)]
    before = rss_kib(p.pid)
    for code in codes:
        c.request("GET", f"/s?status={code}"); c.getresponse().read()
    time.sleep(0.5); s2 = series(c); after2 = rss_kib(p.pid)
    new = s2 - s1
    print(f"{new} new series (one per status code): RSS +{after2-before} KiB = {(after2-before)*1024/max(new,1):.0f} bytes per series (histogram of 14 buckets + its labels)")
    p.terminate(); p.wait()

main()
