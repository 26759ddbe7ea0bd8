"""``imagen doctor``: one check per part of the stack that the instance config and imagen.yaml
imply, each a line saying ok, warn, fail or skip, and what to do.

``report`` runs the probes concurrently under one deadline and renders their lines;
``stack`` holds what the probes share (imagen.yaml, the Dagster instance), opened once;
``databases`` checks the imagen database, its holds and the listener's session;
``dagster_parts`` the instance's storage, the daemon's heartbeat and the limits in force;
``runs`` Redis and the workers of every queue runs go to; ``services`` the backends, the
Storage bucket and the webserver.
"""
