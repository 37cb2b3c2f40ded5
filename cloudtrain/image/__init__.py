"""The training image: AWS's stock TensorFlow images, and building cloudtrain's own (context, ignore rules, docker)."""
