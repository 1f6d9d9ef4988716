"""Path integrals: quadrature rules, the paths (straight, IG2 gradient paths, layer cuts), the memory budget and
the one chunked accumulation loop that integrates them (:class:`igcorr.paths.integrator.PathIntegrator`)."""
