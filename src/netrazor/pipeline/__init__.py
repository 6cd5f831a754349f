"""netrazor.pipeline"""
