"""Closed-loop evaluation in Meta-World: suites, visual shifts, rollout workers, success statistics, videos."""
