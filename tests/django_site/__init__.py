"""A small Django project that the gateway is tested against: users, sessions and a Video model on S3."""
