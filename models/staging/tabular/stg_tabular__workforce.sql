{#- One row per source, facility, quarter and cadre; the most recently landed valid row wins. -#}
with source as (

    select
        *,
        row_number() over (
            partition by source_name, facility_code, period, cadre
            order by landed_at desc, source_file desc, cast(source_row as integer) desc
        ) as recency_rank
    from {{ source('tabular', 'workforce') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids and codes
        facility_code as org_unit_code,
        period as period_id,
        cadre,
        source_name,
        source_file,
        cast(source_row as integer) as source_row,
        batch_id,

        -- descriptors
        facility_name,

        -- numerics (people, posts, visits)
        cast({{ hp_try_cast_double('approved_posts') }} as bigint) as approved_posts,
        cast({{ hp_try_cast_double('filled_posts') }} as bigint) as filled_posts,
        cast({{ hp_try_cast_double('vacant_posts') }} as bigint) as vacant_posts,
        cast({{ hp_try_cast_double('joined') }} as bigint) as staff_joined,
        cast({{ hp_try_cast_double('staff_left') }} as bigint) as staff_left,
        cast({{ hp_try_cast_double('trained_in_quarter') }} as bigint) as trained_in_quarter,
        cast({{ hp_try_cast_double('supervision_visits') }} as bigint) as supervision_visits,
        comment,

        -- timestamps
        landed_at

    from source
    where recency_rank = 1

)

select * from renamed
