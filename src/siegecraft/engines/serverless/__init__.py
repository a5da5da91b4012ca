"""SMLT: data-parallel training on serverless functions under a deadline or a budget.

Function platforms (`emulated`, `lithops`) behind one `FunctionPlatform.invoke` interface with billing
records; parameter stores (`memory`, `redis`); scatter-reduce synchronisation with every piece of state in
the store (so invocations are bounded, re-runnable and a killed driver resumes); a Bayesian planner
that picks workers, memory and batch size every epoch; and the cost ledger and figures of a run.
"""
