"""Work discovery: notice repeated idle chatter and turn it into real tasks found in the workspace.

`swarm.discovery.sources` holds the pluggable work sources (consolidation, audit, docs, todo) that
scan a `swarm.discovery.workspace.Workspace` and propose `swarm.discovery.findings.TaskDraft`s.
"""
