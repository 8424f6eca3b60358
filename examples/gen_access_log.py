#!/usr/bin/env python3
"""Writes a made-up web server access log (Apache combined format) for the
wide finder example (examples/wide-finder.yaml).

    python3 examples/gen_access_log.py PATH SIZE [SEED]

PATH is the file to write ('-': standard output). SIZE is a number of
lines (100000), or of bytes with a unit: 500KB, 100MB, 1GB (powers of 1024;
the log stops at the first line that reaches the size). SEED (default 1)
picks the log: the same arguments always write the same bytes, with any
Python 3.

About 60% of the lines fetch one of 5000 articles, /ongoing/When/NNNx/YYYY/
MM/DD/Name, the wide finder's pattern; the rest are noise the pattern must
skip: images and other files under the article paths (a '.' in the name),
feeds, the home page, HEAD and POST requests of articles, and referers that
name articles. The articles are drawn from a Zipf-like distribution (weight
1/rank^1.1, with the weights past rank 10 cut by 30%), so a few articles
get most of the fetches and the top 10 stands clear of the rest, even in a
small log. Which article gets which rank is random, so the top 10 is not in
alphabetical order.

Only the standard library.
"""

import bisect
import itertools
import random
import sys

ARTICLES = 5000
ZIPF_S = 1.1
STEP_AFTER = 10    # the ranks past this one weigh 30% less
STEP = 0.7

SYLLABLES = ["ba", "co", "da", "fe", "gi", "ho", "ju", "ka", "le", "mi",
             "no", "pa", "qui", "ro", "sa", "te", "vu", "wa", "xe", "yo", "zu"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
          "Oct", "Nov", "Dec"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "NetNewsWire/6.1 (Macintosh; Mac OS X 14.1)",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "curl/7.88.1",
]
REFERERS = ["-", "-", "-", "https://www.google.com/", "https://news.ycombinator.com/",
            "https://example.org/links.html"]
FILES = ["/ongoing/ongoing.atom", "/ongoing/", "/ongoing/serif.css", "/favicon.ico",
         "/robots.txt", "/ongoing/What/Technology/", "/ongoing/misc/logo.png"]


def parse_size(text):
    """('lines', n) or ('bytes', n) from '100000', '500KB', '100MB', '1GB'."""
    t = text.strip().upper()
    for unit, mult in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10),
                       ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if t.endswith(unit):
            return "bytes", int(float(t[:-len(unit)]) * mult)
    return "lines", int(t)


def make_articles(rng):
    """ARTICLES distinct article paths, in rank order (most popular first)."""
    seen, out = set(), []
    while len(out) < ARTICLES:
        year = rng.randrange(2003, 2024)
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randrange(2, 5)))
        name = name.capitalize() + rng.choice(["", "", "-2", "Again", "Notes"])
        path = "/ongoing/When/%03dx/%04d/%02d/%02d/%s" % (
            year // 10, year, rng.randrange(1, 13), rng.randrange(1, 29), name)
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def main(argv):
    if len(argv) not in (3, 4) or argv[1] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 2
    try:
        kind, size = parse_size(argv[2])
        seed = int(argv[3]) if len(argv) == 4 else 1
    except ValueError:
        sys.stderr.write("gen_access_log.py: SIZE is lines (100000) or bytes "
                         "(500KB, 100MB, 1GB), SEED an integer\n")
        return 2
    rng = random.Random(seed)
    articles = make_articles(rng)
    weights = [(1.0 if r < STEP_AFTER else STEP) / (r + 1) ** ZIPF_S
               for r in range(ARTICLES)]
    cum = list(itertools.accumulate(weights))
    total = cum[-1]
    ips = ["%d.%d.%d.%d" % (rng.randrange(1, 224), rng.randrange(256),
                            rng.randrange(256), rng.randrange(1, 255))
           for _ in range(2000)]
    t = 1700000000  # seconds since the epoch, printed as UTC
    out = sys.stdout if argv[1] == "-" else open(argv[1], "w", encoding="ascii",
                                                 newline="\n")
    written = lines = 0
    buf = []
    try:
        while (lines if kind == "lines" else written) < size:
            article = articles[bisect.bisect_left(cum, rng.random() * total)]
            r = rng.random()
            method, status = "GET", 200
            referer = rng.choice(REFERERS)
            if r < 0.60:
                url = article                          # an article fetch
                if rng.random() < 0.1:
                    status = 304
            elif r < 0.70:
                url = article + rng.choice([".png", ".jpg", ".html"])
            elif r < 0.78:
                url = article
                method = rng.choice(["HEAD", "POST"])
            elif r < 0.95:
                url = rng.choice(FILES)
                referer = "https://www.tbray.org" + article
            else:
                url = "/ongoing/When/%s/nope" % rng.choice(["20x", "2007", "200x"])
                status = 404
            t += rng.randrange(0, 3)
            days, secs = divmod(t, 86400)
            # A civil date from days since 1970-01-01 (proleptic Gregorian).
            z = days + 719468
            era = z // 146097
            doe = z - era * 146097
            yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
            doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
            mp = (5 * doy + 2) // 153
            day = doy - (153 * mp + 2) // 5 + 1
            month = mp + 3 if mp < 10 else mp - 9
            year = yoe + era * 400 + (month <= 2)
            size_b = rng.randrange(200, 60000) if status == 200 else 0
            line = '%s - - [%02d/%s/%04d:%02d:%02d:%02d +0000] "%s %s HTTP/1.1" %d %s "%s" "%s"\n' % (
                rng.choice(ips), day, MONTHS[month - 1], year, secs // 3600,
                secs // 60 % 60, secs % 60, method, url, status,
                size_b if size_b else "-", referer, rng.choice(AGENTS))
            buf.append(line)
            written += len(line)
            lines += 1
            if len(buf) >= 4096:
                out.write("".join(buf))
                buf.clear()
        out.write("".join(buf))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
