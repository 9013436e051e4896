"""Settings split by environment: ``base`` holds what every environment shares, and ``dev``,
``test`` and ``production`` add what differs. ``DJANGO_SETTINGS_MODULE`` picks one."""
