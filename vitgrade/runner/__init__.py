"""The trusted side: worker sessions, the student proxy, suites, the pytest plugin, judging."""
