"""The `retrainer` command line. `main.py` composes one sub-parser group per module: `data`,
`registry`, `lifecycle`, `rollout` and `serve`; `demo.py` is the scripted demo scenario."""
