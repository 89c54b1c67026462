"""The federated LoRA demo (`fedveil demo`): run.py runs it and formats the report.

Kept apart from the command (fedveil/commands/demo.py), which parses flags without
importing torch; importing fedveil.demo.run pulls in the training stack.
"""
