"""Render a bench/*.toml.tmpl on the ports of the config bench/ab.sh wrote
(its [server] and [admin] listen addresses and its upstream's port), for
bench/ab_cluster.sh. Usage: ab_render.py TEMPLATE GIVEN OUT REDIS_PORT WORK"""
import re
import sys

tmpl, given, out, redis, work = sys.argv[1:6]
g = open(given).read()
listen = re.search(r'\[server\][^\[]*?listen = "127\.0\.0\.1:(\d+)"', g, re.S).group(1)
admin = re.search(r'\[admin\][^\[]*?listen = "127\.0\.0\.1:(\d+)"', g, re.S).group(1)
upstream = re.search(r'url = "http://127\.0\.0\.1:(\d+)', g).group(1)
text = open(tmpl).read()
for key, value in (
    ("@CUTOVER_PORT@", listen),
    ("@CUTOVER_ADMIN_PORT@", admin),
    ("@UPSTREAM_PORT@", upstream),
    ("@WORK@", work),
    ("@REDIS_PORT@", redis),
):
    text = text.replace(key, value)
open(out, "w").write(text)
