"""netrazor.models"""
