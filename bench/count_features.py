"""Patch a copy of the harness's bench.py so its cutover summary also
counts shadow and cache results (cutover_shadow_requests_total,
cutover_cache_requests_total), keyed "shadow:RESULT" and "cache:RESULT"."""
import sys

path = sys.argv[1]
text = open(path).read()
old = """    for m in re.finditer(r'^cutover_requests_total\\{([^}]*)\\}\\s+([0-9.e+]+)', text, re.M):
        version = re.search(r'version="([^"]*)"', m.group(1))
        key = version.group(1) if version else "?"
        counts[key] = counts.get(key, 0) + float(m.group(2))
"""
new = old + """    for kind in ("shadow", "cache"):
        pattern = r'^cutover_' + kind + r'_requests_total\\{([^}]*)\\}\\s+([0-9.e+]+)'
        for m in re.finditer(pattern, text, re.M):
            result = re.search(r'result="([^"]*)"', m.group(1))
            key = kind + ":" + (result.group(1) if result else "?")
            counts[key] = counts.get(key, 0) + float(m.group(2))
"""
if old not in text:
    sys.exit("count_features.py: bench.py changed; update the patch")
open(path, "w").write(text.replace(old, new))
