"""The toy text-to-video world: procedural clips, their captions, and (later) a tiny generator and detector."""
