"""A command-line client for a deployed stack (``zipjobs submit``, ``zipjobs upload-samples``)."""
