"""OCI distribution client: references, auth, manifests, blobs, digest-exact copies.

Imports neither Prefect nor gates/ or flows/ (imports go registry <- gates <- flows).
"""
