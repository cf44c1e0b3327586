"""What a person sees: the console (progress line, summary, errors), the run report and the nightly trend."""
