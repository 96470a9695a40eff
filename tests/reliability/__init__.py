"""The long reliability suite (`make reliability`); the fast part is tests/server/."""
