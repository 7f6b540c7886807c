with source as (

    select * from {{ source('healthpipe', 'indicators') }}

),

renamed as (

    select
        -- ids
        indicator_id,

        -- descriptors
        name,
        domain,
        description,
        unit,
        direction,
        source_file,
        problem,

        -- definition
        numerator,
        denominator,
        numerator_sql,
        denominator_sql,
        factor,
        target,
        is_computable

    from source

)

select * from renamed
