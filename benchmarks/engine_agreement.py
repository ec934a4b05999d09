"""How far SUMO and CityFlow agree on one scenario, metric by metric, under the same controllers.

For FixedTime and MaxPressure, one episode of ``--decisions`` decisions on each engine: average travel
time, throughput, and per decision the vehicles on incoming lanes (what the ``travel_time`` reward
integrates) and the halted ones among them (the ``queue`` reward; both engines count a vehicle below
0.1 m/s as halted: SUMO's ``getLastStepHaltingNumber``, CityFlow's ``get_lane_waiting_vehicle_count``).
The last column is SUMO's figure over CityFlow's.

    python benchmarks/engine_agreement.py --scenario ~/.cache/ipgnn/datasets/hangzhou_4x4
"""

import argparse

import numpy as np
from _traffic import traffic_env

from ipgnn.traffic import load_scenario


def episode(scenario: str, n: int, engine: str, controller: str, decisions: int) -> dict[str, float]:
    env = traffic_env(scenario, n, engine, decisions)
    raw, act = env.env, env.reference_policies()[controller]
    lanes = sorted({f"{r}_{k}" for a in raw.scenario.intersections for r, k in a.incoming_lanes})
    obs, on, halted = env.reset(seed=0), [], []
    while True:
        res = env.step(act(obs))
        obs = res.obs
        counts, waiting = raw.engine.get_lane_vehicle_count(), raw.engine.get_lane_waiting_vehicle_count()
        on.append(sum(counts.get(l, 0) for l in lanes))
        halted.append(sum(waiting.get(l, 0) for l in lanes))
        if res.done:
            break
    env.close()
    return {
        "average travel time (s)": res.episode["average_travel_time"],
        "throughput": res.episode["throughput"],
        "vehicles on incoming lanes per decision": float(np.mean(on)),
        "halted vehicles per decision (queue reward)": float(np.mean(halted)),
        "halted share of vehicles on incoming lanes": float(np.sum(halted) / max(1, np.sum(on))),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", required=True, help="a CityFlow scenario directory or generator spec")
    p.add_argument("--decisions", type=int, default=100)
    args = p.parse_args()
    n = load_scenario(args.scenario).num_agents if not args.scenario.startswith("{") else None
    print("| controller | metric | SUMO | CityFlow | SUMO / CityFlow |")
    print("|---|---|---|---|---|")
    for controller in ("FixedTime", "MaxPressure"):
        res = {e: episode(args.scenario, n, e, controller, args.decisions) for e in ("sumo", "cityflow")}
        for metric in res["sumo"]:
            s, c = res["sumo"][metric], res["cityflow"][metric]
            print(f"| {controller} | {metric} | {s:.3g} | {c:.3g} | {s / c if c else float('nan'):.2f} |", flush=True)


if __name__ == "__main__":
    main()
