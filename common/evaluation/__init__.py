"""Closed-loop evaluation in a simulator (common/simulators): suites, rollout workers, success statistics, videos."""
