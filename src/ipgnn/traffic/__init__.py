"""Traffic-signal control: CityFlow-format scenarios (work in progress towards the traffic issue)."""

from ipgnn.traffic.scenario import Intersection, Road, RoadLink, Scenario, ScenarioError, load_scenario

__all__ = ["Intersection", "Road", "RoadLink", "Scenario", "ScenarioError", "load_scenario"]
