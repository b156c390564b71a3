"""The web neuron browser: Jinja2 pages served by the same app as the REST API."""
