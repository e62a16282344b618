"""The sweep engine: config -> plan -> jobs (on Ray, or one by one in ``loop``) -> results -> tracking and
reports. Data flows one way through these modules, in that order."""
