"""brewmesh: shared runtime of the mesh (server bootstrap, errors, auth,
storage, events, client helper, partner SDK, CLI).

The gRPC stubs live beside this code in `brewmesh.<area>.v1`, generated from
protos/ by scripts/build_protos.py.
"""

from brewmesh import stubs

stubs.check_fresh()
