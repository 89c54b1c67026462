"""The client side: transport, training, DP-SGD, ledgers."""

from fedveil.clients.prv import install as _install_prv_backend

# secagg's PRV accountant is injected (issue 16): clients account DP-SGD with Opacus'.
_install_prv_backend()
