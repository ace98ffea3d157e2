"""litwatch: a literature monitor for fibromyalgia and autoimmunity research."""

__version__ = "0.1.0"
