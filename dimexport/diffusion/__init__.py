"""Noise schedules, samplers, classifier-free guidance and the sampling pipeline of the DiM and DiS families."""
