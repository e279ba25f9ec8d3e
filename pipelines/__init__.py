"""edgeship.pipelines: manifest loading, JSON Schemas, the stage runner, build cache."""
