"""The dataset format: object ids, canonical objects, manifests, paging, chunking, path rules, subsets, identities."""
