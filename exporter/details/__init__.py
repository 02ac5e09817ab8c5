"""The details of each active project: fetched per collector, scheduled, rendered and published."""
