"""Spend and usage: the costs and usage endpoints' time buckets, as counters and month-to-date gauges."""
