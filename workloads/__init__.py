"""workloads: generators of client operations and the checkers that judge them
(a register, a shopping cart of adds), independent of any one system.
"""
