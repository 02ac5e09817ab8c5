"""Markdown tables and target verdicts from the results dictionary run.py builds."""

from __future__ import annotations

from measure import cpu_over

TARGET_N = 100_000


def _ms(figure: dict) -> str:
    if not figure or not figure.get("n"):
        return "–"
    return f"{figure['median_ms']:.1f} / {figure['p99_ms']:.1f}"


def _mb(size: int | None) -> str:
    return "–" if size is None else f"{size / 1e6:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def targets(results: dict) -> list[dict]:
    """The issue's targets, as ratios of figures from the same run, at the largest N measured."""
    sizes = sorted(int(n) for n in results["sizes"])
    if not sizes:
        return []
    big, small = results["sizes"][str(sizes[-1])], results["sizes"][str(sizes[0])]
    exporter, busy, floor, plain, client = big["exporter"], big["busy"], big["static"], big["plain"], big["read_only"]
    found = []

    def add(name, value, limit, higher_is_better=False, detail=""):
        ok = value >= limit if higher_is_better else value <= limit
        found.append(
            {
                "target": name,
                "n": sizes[-1],
                "value": round(value, 3),
                "limit": ("≥ " if higher_is_better else "≤ ") + f"{limit:g}",
                "verdict": "PASS" if ok else "FAIL",
                "detail": detail,
            }
        )

    for kind in ("identity", "gzip"):
        add(
            f"scrape median vs static floor ({kind})",
            exporter[kind]["median_ms"] / floor[kind]["median_ms"],
            1.5,
            detail=f"{exporter[kind]['median_ms']:.1f} ms vs {floor[kind]['median_ms']:.1f} ms",
        )
    paced = big["paced"]
    for kind in ("identity", "gzip"):
        during, between = paced["during"][kind], paced["between"][kind]
        if during.get("n") and between.get("n"):
            add(
                f"scrape median during a poll vs between polls ({kind})",
                during["median_ms"] / between["median_ms"],
                1.5,
                detail=f"{during['median_ms']:.1f} ms vs {between['median_ms']:.1f} ms, {during['n']} and "
                f"{between['n']} scrapes at random moments of one exporter's poll cycle",
            )
    add(
        "steady RSS vs plain exporter",
        busy["steady_rss_mib"] / plain["memory"]["rss_mib"],
        0.5,
        detail=f"{busy['steady_rss_mib']:.0f} MiB (median after polls 2-{len(busy['rss_after_each_poll_mib'])}) vs "
        f"{plain['memory']['rss_mib']:.0f} MiB; after the first poll only: "
        f"{exporter['memory_after_poll']['rss_mib']:.0f} MiB",
    )
    add(
        "warm poll CPU vs httpx read-only client",
        busy["warm_poll"]["cpu_s"] / client["cpu_s"],
        1.5,
        detail=f"{busy['warm_poll']['cpu_s']:.2f} s vs {client['cpu_s']:.2f} s "
        f"(cold first poll: {exporter['cold_poll']['cpu_s']:.2f} s, "
        f"{exporter['cold_poll']['cpu_s'] / client['cpu_s']:.2f}x)",
    )
    if len(sizes) > 1:
        for kind in ("identity", "gzip"):
            excess = [cpu_over(s["exporter"][kind], s["static"][kind]) for s in (small, big)]
            add(
                f"per-scrape CPU over the floor, growth from N={sizes[0]:,} ({kind}, ms)",
                excess[1] - excess[0],
                1.0,
                detail=f"{excess[0]:.2f} ms at N={sizes[0]:,}, {excess[1]:.2f} ms at N={sizes[-1]:,}",
            )
    concurrency = results.get("concurrency")
    if concurrency:
        seq, par = concurrency["sequential"], concurrency["concurrent"]
        add(
            f"second poll, concurrency 1 vs {par['concurrency']} at "
            f"{concurrency['rtt_s'] * 1000:.0f} ms RTT (speed-up)",
            seq["second_poll"]["fetch_wall_s"] / par["second_poll"]["fetch_wall_s"],
            5.0,
            higher_is_better=True,
            detail=f"{seq['second_poll']['fetch_wall_s']:.1f} s vs {par['second_poll']['fetch_wall_s']:.1f} s, "
            f"N={concurrency['projects']:,}",
        )
        found[-1]["n"] = concurrency["projects"]
        same = seq["snapshot"] == par["snapshot"]
        found.append(
            {
                "target": "identical snapshots, concurrency 1 and N",
                "n": concurrency["projects"],
                "value": same,
                "limit": "equal",
                "verdict": "PASS" if same else "FAIL",
                "detail": f"{seq['snapshot']['series']:,} vs {par['snapshot']['series']:,} per-project series",
            }
        )
    return found


def render(results: dict) -> str:
    machine = results["machine"]
    out = [
        f"Machine: {machine['cpu_count']} cores ({machine['cpu_model']}), Python {machine['python']}, "
        f"{machine['platform']}; {machine['date']}; upstream: {results['upstream']}; "
        f"load average at start {machine['loadavg_start']}, at end {machine.get('loadavg_end', '–')}.",
        "",
    ]
    sizes = sorted(results["sizes"], key=int)

    rows = []
    for n in sizes:
        s = results["sizes"][n]
        cold, warm, client, plain = (
            s["exporter"]["cold_poll"],
            s["busy"]["warm_poll"],
            s["read_only"],
            s["plain"]["poll"],
        )
        rows.append(
            [
                f"{int(n):,}",
                cold["pages"],
                cold["requests"],
                f"{cold['fetch_wall_s']:.2f} / {cold['published_wall_s']:.2f}",
                f"{cold['cpu_s']:.2f}",
                f"{warm['fetch_wall_s']:.2f}",
                f"{warm['cpu_s']:.2f}",
                f"{client['wall_s']:.2f}",
                f"{client['cpu_s']:.2f}",
                f"{plain['wall_s']:.2f}",
                f"{plain['cpu_s']:.2f}",
                f"{warm['cpu_s'] / client['cpu_s']:.2f}x",
                f"{client['upstream_cpu_ms_per_page']:.2f}",
            ]
        )
    out += [
        "**Full poll** (seconds; wall = `openai_poll_duration_seconds`, the whole poll / until published)",
        "",
        _table(
            [
                "N",
                "pages",
                "requests",
                "cold wall",
                "cold CPU",
                "warm wall",
                "warm CPU",
                "read-only wall",
                "read-only CPU",
                "plain wall",
                "plain CPU",
                "warm CPU / read-only",
                "upstream CPU ms/page",
            ],
            rows,
        ),
        "",
    ]

    rows = []
    for n in sizes:
        s = results["sizes"][n]
        for label, figure in (
            ("exporter, idle", s["exporter"]),
            ("static floor", s["static"]),
            ("exporter, scraped at random moments: during a poll", s["paced"]["during"]),
            ("same exporter, same minutes: between polls", s["paced"]["between"]),
            ("exporter, back-to-back scrapes during back-to-back polls", s["busy"]["during_poll"]),
            ("static floor, during the same exporter's polls", s["busy"]["static_during_poll"]),
            ("plain prometheus_client", s["plain"]),
        ):

            def cpu(kind: str, figure: dict = figure) -> str:
                if "server_cpu_ms_per_scrape" not in figure[kind]:
                    return "–"
                return f"{figure[kind]['server_cpu_ms_per_scrape']:.1f}"

            rows.append(
                [
                    f"{int(n):,}",
                    label,
                    _ms(figure["identity"]),
                    _ms(figure["gzip"]),
                    f"{figure['identity'].get('n', 0)} / {figure['gzip'].get('n', 0)}",
                    f"{_mb(figure['identity'].get('bytes'))} / {_mb(figure['gzip'].get('bytes'))}",
                    f"{cpu('identity')} / {cpu('gzip')}",
                ]
            )
        e, f = s["exporter"], s["static"]
        rows.append(
            [
                f"{int(n):,}",
                "**exporter / floor**",
                f"{e['identity']['median_ms'] / f['identity']['median_ms']:.2f}x",
                f"{e['gzip']['median_ms'] / f['gzip']['median_ms']:.2f}x",
                "",
                "",
                f"{cpu_over(e['identity'], f['identity']):+.2f} / {cpu_over(e['gzip'], f['gzip']):+.2f}",
            ]
        )
    out += [
        "**Scrape latency** (ms, median / p99 nearest rank; body fully read, gzip not decompressed; "
        "the idle exporter and the static floor scraped in turns; server CPU is the median over scrapes, "
        "its difference the median of scrape-by-scrape differences)",
        "",
        _table(["N", "server", "identity", "gzip", "scrapes", "body MB", "server CPU ms/scrape"], rows),
        "",
    ]
    costs = []
    for n in sizes:
        s = results["sizes"][n]
        polls = s["busy"]["during_poll"].get("polls") or {}
        if polls.get("n"):
            costs.append(
                f"N={int(n):,}: {polls['wall_s']:.2f} s, of which {polls['paused_s']:.2f} s paused "
                f"(without scrapes {s['busy']['warm_poll']['fetch_wall_s']:.2f} s; median of {polls['n']})"
            )
    if costs:
        out += [
            "What back-to-back scrapes cost the polls they overlap (the poll steps aside for each scrape, "
            "at most 3x its running time): " + "; ".join(costs),
            "",
        ]
    out += [
        "Scraped at random moments, the exporter polled every "
        + ", ".join(f"{results['sizes'][n]['paced']['interval_s']} s (N={int(n):,})" for n in sizes)
        + ".",
        "",
    ]

    rows = []
    for n in sizes:
        s = results["sizes"][n]
        e, b, plain = s["exporter"], s["busy"], s["plain"]
        rows += [
            [
                f"{int(n):,}",
                "exporter, after the first poll",
                f"{e['memory_after_poll']['rss_mib']:.0f}",
                f"{e['memory_after_poll']['peak_mib']:.0f}",
            ],
            [
                f"{int(n):,}",
                "exporter, after idle scrapes",
                f"{e['memory']['rss_mib']:.0f}",
                f"{e['memory']['peak_mib']:.0f}",
            ],
            [
                f"{int(n):,}",
                f"exporter, steady: median after polls 2-{len(b['rss_after_each_poll_mib'])}",
                f"**{b['steady_rss_mib']:.0f}**",
                f"{b['peak_without_scrapes_mib']:.0f}",
            ],
            [
                f"{int(n):,}",
                "exporter, after scrapes during polls",
                f"{b['memory']['rss_mib']:.0f}",
                f"{b['memory']['peak_mib']:.0f}",
            ],
            [
                f"{int(n):,}",
                "static floor",
                f"{s['static']['memory']['rss_mib']:.0f}",
                f"{s['static']['memory']['peak_mib']:.0f}",
            ],
            [
                f"{int(n):,}",
                f"plain prometheus_client, after {plain['poll'].get('polls', 1)} polls and its scrapes",
                f"**{plain['memory']['rss_mib']:.0f}**",
                f"{plain['memory']['peak_mib']:.0f}",
            ],
            [
                f"{int(n):,}",
                "**exporter steady / plain**",
                f"{b['steady_rss_mib'] / plain['memory']['rss_mib']:.2f}x",
                "",
            ],
        ]
    out += [
        "**Memory** (whole-process MiB: VmRSS / peak VmHWM so far)",
        "",
        _table(["N", "process", "RSS", "peak RSS"], rows),
        "",
        "Exporter RSS after each back-to-back poll (MiB): "
        + "; ".join(
            f"N={int(n):,}: " + " → ".join(f"{r:.0f}" for r in results["sizes"][n]["busy"]["rss_after_each_poll_mib"])
            for n in sizes
        ),
        "",
    ]

    concurrency = results.get("concurrency")
    if concurrency:
        rows = []
        for label in ("sequential", "concurrent"):
            c = concurrency[label]
            rows.append(
                [
                    c["concurrency"],
                    f"{c['first_poll']['fetch_wall_s']:.1f}",
                    f"{c['second_poll']['fetch_wall_s']:.1f}",
                    c["second_poll"]["pages"],
                    f"{c['second_poll']['cpu_s']:.2f}",
                    f"{c['snapshot']['series']:,}",
                    c["snapshot"]["sha256"][:12],
                ]
            )
        out += [
            f"**Concurrent paging** (N={concurrency['projects']:,}, {concurrency['rtt_s'] * 1000:.0f} ms per page)",
            "",
            _table(
                [
                    "--poll.concurrency",
                    "1st poll s",
                    "2nd poll s",
                    "2nd poll pages",
                    "2nd poll CPU s",
                    "series",
                    "snapshot digest",
                ],
                rows,
            ),
            "",
        ]

    rows = [
        [t["target"], f"{t['n']:,}", t["value"], t["limit"], f"**{t['verdict']}**", t["detail"]]
        for t in results["targets"]
    ]
    note = (
        ""
        if any(t["n"] == TARGET_N for t in results["targets"])
        else f" (the issue's targets are set at N={TARGET_N:,}; this run's largest N is smaller)"
    )
    out += [f"**Targets**{note}", "", _table(["target", "N", "ratio", "limit", "verdict", "figures"], rows)]
    return "\n".join(out)
