"""Scoring structures for a task: tasks and their shipped YAML, rewards, the scorer and its executors.

Task loading (:mod:`matinvent.scoring.tasks`) is torch-free; this file imports nothing.
"""
