"""Traffic-signal control: CityFlow-format scenarios, generators, SUMO and CityFlow engines, the environment
and the classic controllers."""

from ipgnn.traffic.scenario import Intersection, Road, RoadLink, Scenario, ScenarioError, load_scenario

__all__ = ["Intersection", "Road", "RoadLink", "Scenario", "ScenarioError", "load_scenario"]
