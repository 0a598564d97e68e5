"""Failover at 200 requests/s: kill one of two replicas under load, count failed requests and time
how long the dead replica stays in rotation.

    python benchmarks/failover.py [--runs 5] [--rate 200]

Each run starts the drill fleet without the engine (`modelfleet serve` + fake upstreams), sends an
open-loop load of non-streaming requests to the two-replica `pair` route, SIGKILLs one replica after
1.5 s and polls /readyz every 2 ms until the gateway has taken it out (after that no request goes
to it: only ready replicas are chosen). Targets: 0 failed requests; out of rotation within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import aiohttp

from modelfleet.bench.drills import drill_fleet, failover_under_load


async def main(runs: int, rate: float) -> None:
    outs, failed, sent = [], 0, 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for i in range(runs):
            async with drill_fleet(engine=False) as fleet:
                await asyncio.sleep(0.5)
                r = await failover_under_load(session, fleet, rate=rate)
            out = f"{r.out_after * 1000:.0f} ms" if r.out_after is not None else "never"
            print(f"run {i + 1}: {r.sent} requests at {r.rate:.0f}/s, {r.failed} failed, out of rotation after {out}")
            sent += r.sent
            failed += r.failed
            if r.out_after is not None:
                outs.append(r.out_after * 1000)
    print(f"\n{runs} runs, {sent} requests: {failed} failed (target 0); killed replica out of rotation after "
          f"median {statistics.median(outs):.0f} ms, max {max(outs):.0f} ms (target <= 1000 ms)")  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    args = ap.parse_args()
    asyncio.run(main(args.runs, args.rate))
