"""The generate path, from what a user asks to a staged image. Its entry points:
:func:`imagen_pipeline.generate.planning.plan_generation` (the run's one plan, in
``enrich_prompt``) and :func:`imagen_pipeline.generate.making.make_images` (re-use, options,
budget, the backend call, fallback and staging, in the generate step). The modules import
nothing here, so loading a config does not load the whole path."""
