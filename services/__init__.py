"""The services of the mesh, each a component hosted by brewmesh.mesh."""
