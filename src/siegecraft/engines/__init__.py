"""The engines layer: one package per topology (federated, hogwild, serverless).

Each engine imports only `siegecraft.core`. Import the submodules you need: worker processes and
function containers import only what they use, so this package imports nothing.
"""
