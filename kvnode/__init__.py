"""kvnode: a reference Dynamo-style key-value node, the first system under test.

It is a readable implementation of the Dynamo paper: consistent hashing with
virtual nodes, N/W/R quorums, dotted version vectors with siblings (or
last-write-wins), and, underneath, an LSM storage engine (`kvnode.storage`).
Nothing here imports the harness: the node knows nothing of being tested.
"""
