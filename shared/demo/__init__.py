"""Demo models that compute real RDKit descriptors, and their model server.

The hub needs models to run end to end without pulling model images. This
package provides three small models and an HTTP server that serves any one
of them over the Ersilia model-server protocol. It also contains a file of
approved drug SMILES to submit.
"""
