"""Orchestration: the plans (which stages run, in which order, with what) and the Runner that runs one.

Importing this package is cheap on purpose: the Dagger module and `llmgate --help` import the plans.
"""
